"""The embedded benchmark: procedural motions of the embedded body, rendered to textured videos."""
