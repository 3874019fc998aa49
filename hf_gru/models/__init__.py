"""Model families, one folder each, as transformers' own `models/<name>/`. A folder holds exactly the code that
`save_pretrained` copies next to a checkpoint, so it imports only its siblings, torch, transformers and the standard
library."""
