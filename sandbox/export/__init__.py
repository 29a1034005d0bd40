"""Policies in the formats other engines read: OCI seccomp profiles (runc, Docker,
Kubernetes' Localhost profiles), systemd unit settings, Kubernetes securityContext.

  oci          export a policy's filter as `linux.seccomp`; import a profile as a policy
  systemd      a unit drop-in with the policy's settings, as far as systemd has them
  kubernetes   a container's securityContext and its Localhost seccomp profile
"""
