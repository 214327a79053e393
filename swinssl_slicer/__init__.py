"""Shared logic of every SwinSSL face (the Slicer modules and the web app): MRML in and out of files,
engine subprocesses, their events, stop and cancel. Qt-free and widget-free: MRML and VTK only."""
