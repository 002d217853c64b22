"""The model registry: committed versions and the production pointer (`versions`), their
storage on a path or an fsspec URL (`store`), and the retrain lock (`lock`)."""
