"""CleanCoin's sandbox layer: policy files, enforcement steps, launcher and reports.

Data flows one way: a policy file is parsed and validated into a `Policy` model
(`policy_loader`), compiled against this kernel and the launch variables into a `Plan`
(`plan_compiler`, `plan`), carried out by one ordered list of steps (`steps`: the filesystem
view in `rootfs`, the rest in one module per mechanism) by a launched child (`launcher`,
`zygote`) or by a process restricting itself (`self_restrict`), and summed up in a `Report`
(`report`) built from what the steps did. This package knows nothing about coins.
"""
