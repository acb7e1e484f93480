"""Where plans take effect: `sim` (simulated FLASH kernel + data plane) and `native`."""
