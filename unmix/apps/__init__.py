"""Features built on the library's pieces: product photos, distillation, synthetic data."""
