"""Tables, queries and blobs: the durable state of Likeness."""
