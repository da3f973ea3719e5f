"""neural-tangents' ``_src.utils`` (see `infwidth._src`)."""
