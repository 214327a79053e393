"""Logic of the SwinSSL Slicer modules: MRML in and out of files, engine subprocesses. No Qt here."""
