"""UNet segmentation on Oxford-IIIT Pet: model, losses, metrics, pictures (the loop is shared/)."""
