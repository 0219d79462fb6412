from sqlalchemy import inspect

from storage.db import from_blob, get_engine, migrate, to_blob
from storage.models import Base


def test_migrations_create_every_model_table(db_url):
    names = set(inspect(get_engine(db_url)).get_table_names())
    assert set(Base.metadata.tables) <= names
    migrate(db_url)  # idempotent


def test_blob_roundtrip():
    import numpy as np

    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert np.array_equal(from_blob(to_blob(a), 4), a.astype(np.float32))
