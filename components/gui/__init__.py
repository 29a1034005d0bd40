"""CleanCoin's graphical wallet (PySide6): the window CleanCoin-qt and CleanCoin-gui show.

The GUI sees the node only through the `Node` interface (components/interfaces/node.py): a
local binding in CleanCoin-qt (node and wallet in this process), a Cap'n Proto proxy in
CleanCoin-gui (a CleanCoin-node it spawned or attached to). It cannot tell which. What
changes reaches it as `NodeNotifications` callbacks (`events.NodeEvents`); it never polls.

One module per job: `loop` (asyncio on Qt's event loop), `client` (calls and their
statistics), `events` (notifications as Qt signals), `settings`, `models`, `units`, one
module per screen, `main_window`, `app` (the application object an init module builds).
PySide6 is imported only inside this package and the GUI init modules.
"""
