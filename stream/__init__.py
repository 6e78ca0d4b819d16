"""streamrec's streaming side: the Faust app, schemas, settings and tools around it."""
