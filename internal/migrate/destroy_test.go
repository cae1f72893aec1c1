package migrate

import (
	"fmt"
	"strings"
	"testing"
)

// What a release destroys, by the grammar: scoped where it can say which
// rows, said so where it cannot.
func TestDestructions(t *testing.T) {
	ds, err := Destructions("V2.sql", `ALTER TABLE a DROP COLUMN x, ALTER COLUMN y TYPE int USING round(y);
DROP TABLE s.t, u;
TRUNCATE v;
UPDATE w SET p = 1, q = lower(q) WHERE r;
UPDATE w SET arr[1] = 0;
WITH d AS (SELECT 1) DELETE FROM z USING d WHERE z.id = 1;
CREATE TABLE fine (id int);`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, fmt.Sprintf("%s %s.%s %v", d.Kind, d.Table, d.Column, d.Scoped))
	}
	want := "drop-column a.x true|type-change a.y true|drop-table s.t. true|drop-table u. true|truncate v. true|update w.p true|update w.q true|update w.arr false|delete z. false"
	if strings.Join(got, "|") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, "|"), want)
	}
}
