"""The portal's store: models, search, import and demo data; backends in sub-packages (sqlite/)."""
