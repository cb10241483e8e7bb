"""Losses as pure tensor functions: supervised (SPIN/EFT), anchoring regularisers, TexturePose, flow."""
