@0xd7a1c0f3b2e94a51;
# Echo: the smallest useful interface, for checking that a connection works end to end.

interface Echo {
  echo @0 (echo :Text) -> (result :Text);
  # Returns its argument.
  destroy @1 () -> ();
  # Releases the server-side object before the capability is dropped.
}
