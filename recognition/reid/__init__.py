"""Face re-identification: dlib 128-d descriptors and the distances between them."""

from recognition.reid.embedder import EMBEDDING_DIM, FaceEmbedder, pairwise_distance, robust_mean

__all__ = ["EMBEDDING_DIM", "FaceEmbedder", "pairwise_distance", "robust_mean"]
