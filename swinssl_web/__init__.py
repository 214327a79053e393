"""SwinSSL Web: the SwinSSL journeys (segment, correct, fine-tune, pretrain with previews) in a browser, on
trame-slicer (Slicer's MRML scene, views and segment editor served by trame). A face over the shared
Qt-free logic of :mod:`swinssl_slicer`; installed with ``pip install swinssl[web]``."""
