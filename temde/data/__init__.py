"""Data: SCAN precomp features + captions, vocabularies, tokenization, synthetic data, Lightning datamodule."""
