"""Text vectors as data: computed once, cached on disk, shared across processes, attached to a table.

Models compute vectors; this package decides when they are computed, keeps them and hands them to
the batches. Nothing here is needed to build or run a model in a plain PyTorch loop.
"""

from mmtab.embeddings.frozen import FrozenEncoder, VectorSource, bf16_is_native
from mmtab.embeddings.pipeline import ProcessShare, TextEmbeddings, embed_table
from mmtab.embeddings.store import EmbeddingStore, default_cache_dir

__all__ = ["EmbeddingStore", "FrozenEncoder", "ProcessShare", "TextEmbeddings", "VectorSource", "bf16_is_native",
           "default_cache_dir", "embed_table"]
