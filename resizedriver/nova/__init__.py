"""The Nova adapter: the only part of resizedriver that imports nova."""
