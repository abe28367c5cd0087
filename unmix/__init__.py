"""unmix: denoising diffusion models written around one denoiser interface D(x, sigma, cond) -> x0_hat."""
