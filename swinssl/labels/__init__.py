"""Label tables and segmentation files (.seg.nrrd, NIfTI label maps)."""
