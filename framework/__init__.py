"""alignplay's framework: configs, algorithms (pure maths), the driver, checkpoints and the CLI."""
