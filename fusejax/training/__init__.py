"""SFT and DPO training: config, data, losses, jitted steps, loop, TPU compile check."""
