"""Small cross-cutting helpers (logging, fault points, GC pauses) that import nothing else of lifecycle."""
