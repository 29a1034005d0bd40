"""The interfaces between CleanCoin's processes, each defined once (README.md beside this file):
a Python protocol and its Cap'n Proto schema side by side."""
