"""Finding and reading medical volumes (NIfTI, NRRD, MetaImage, DICOM series) with SimpleITK."""
