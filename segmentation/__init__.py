"""detseg.segmentation: FCN, U-Net, segmentation metrics and instance post-processing."""
