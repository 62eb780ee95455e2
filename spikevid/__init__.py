"""spikevid: the command-line front end (``spikevid --help``)."""
