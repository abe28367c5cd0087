"""Foreign weights as unmix denoisers: the libraries' own network classes wrapped into the one denoiser contract, their
schedules read as sigmas (k-diffusion's external.py is the model)."""
