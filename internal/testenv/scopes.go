package testenv

import (
	"os"
	"path/filepath"
	"strings"
)

// MatchingRow is one row of the matching table of docs/scopes.md: does a
// granted scope cover a required one?
type MatchingRow struct {
	Granted, Required string
	Covered           bool
}

// MatchingTable reads the matching table of docs/scopes.md, so that the
// tests that run it (internal/token, internal/authserver) check exactly
// what users read.
func MatchingTable() ([]MatchingRow, error) {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "docs", "scopes.md"))
	if err != nil {
		return nil, err
	}
	doc := string(data)
	start := strings.Index(doc, "| granted | required | covered | why |")
	if start < 0 {
		return nil, os.ErrNotExist
	}
	var rows []MatchingRow
	for _, line := range strings.Split(doc[start:], "\n")[2:] {
		if !strings.HasPrefix(line, "| `") {
			break
		}
		cells := strings.Split(line, "|")
		rows = append(rows, MatchingRow{
			Granted:  strings.Trim(strings.TrimSpace(cells[1]), "`"),
			Required: strings.Trim(strings.TrimSpace(cells[2]), "`"),
			Covered:  strings.TrimSpace(cells[3]) == "yes",
		})
	}
	return rows, nil
}
