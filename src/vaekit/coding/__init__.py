"""Compression: real lossless files by bits-back coding, decoded exactly on any machine.

The lifecycle follows CompressAI's: a trained model's likelihoods give the coding
distributions, `exact_arithmetic` makes them identical bit for bit on every machine,
`bitsback` pushes and pops latents and pixels through constriction's ANS coder with the
schedule the model family declares, and `files` writes the `.vkz` container (FORMAT.md).
"""
