@0xa6f0c2d9e8b35174;
# Auth: the only capability a TCP listener offers before a client has proven who it is.

using Init = import "init.capnp".Init;

interface Auth {
  login @0 (user :Text, password :Text) -> (init :Init);
  # With the cookie (user "__cookie__", password from .ipccookie in the process's data
  # directory: a node's network datadir) or the
  # -ipcauth=USER:PASSWORD credentials, returns the process's Init; otherwise fails.
}
