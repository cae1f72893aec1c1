-- Undo of 000002: the column and its data go; the snapshot taken first keeps them.
ALTER TABLE transactions DROP COLUMN IF EXISTS category;
