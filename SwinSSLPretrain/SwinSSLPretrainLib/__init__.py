"""Logic of SwinSSLPretrain: training subprocesses, live loss tables and previews, scene export. No Qt here."""
