"""What each ``poseidon`` command does once ``cli.py`` has parsed its options.

``train`` (one machine), ``test``, ``time`` and ``cluster`` (``train --hosts``); ``common`` holds
the rules every command shares: which device, which run folder, how the package's log records reach
the training log. ``cli.py`` stays parsing and error mapping only.
"""
