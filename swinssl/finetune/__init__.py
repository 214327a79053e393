"""Fine-tuning Swin UNETR for segmentation on labelled volumes from folders, datalists and Slicer scenes."""
