"""Self-supervised pretext tasks of Tang et al. (CVPR 2022): inpainting, rotation, contrastive coding."""
