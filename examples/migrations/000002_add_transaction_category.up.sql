-- v1.2.0: transactions get a category (the runbook's example migration).
ALTER TABLE transactions ADD COLUMN category text;
