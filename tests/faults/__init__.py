"""The fault suite (a package, so its conftest does not shadow the other folders' ``conftest``)."""
