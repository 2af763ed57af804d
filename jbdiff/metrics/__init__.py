"""Measurements of audio: codec reconstruction and codebook use, and musical metrics of
generated clips (musicnn embeddings and tags, chroma, key, seams, loudness; transcribed notes
and tonalness in ``pitch``).

Floor code like ``jbdiff.core`` (which is all it may import): it measures arrays and tensors
and knows nothing of models, bundles or the pipeline.
"""
