// Command sizes lists every Go file over 400 lines and every function over
// 80 lines under the directories it is given (default: the current one),
// leaving out test files (_test.go) and generated files (a "Code generated
// ... DO NOT EDIT." line), and exits 1 if it listed any (2 if a file
// cannot be read or parsed):
//
//	go run ./hack/sizes .
//
// Each line is "<lines> <file>" for a file and "<lines> <file>:<line>
// <Recv.Func>" for a function, counted from the func keyword to the closing
// brace. A function that is a data table may be exempted by a
// //sizes:table comment in the doc comment directly above it; the
// exemptions that applied are printed too ("exempt: ..."). Directories
// named vendor, testdata or bin, or starting with "." or "_", are skipped.
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const (
	maxFileLines = 400
	maxFuncLines = 80
	// tableDirective in a function's doc comment exempts it from
	// maxFuncLines.
	tableDirective = "//sizes:table"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run checks the directories of args and writes the listing to stdout; it
// returns 1 when something is over a limit, 2 when a file cannot be read or
// parsed, and 0 otherwise.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		args = []string{"."}
	}
	var all result
	for _, root := range args {
		r, err := check(root)
		if err != nil {
			fmt.Fprintf(stderr, "sizes: %v\n", err)
			return 2
		}
		all.over = append(all.over, r.over...)
		all.exempt = append(all.exempt, r.exempt...)
	}
	for _, f := range all.over {
		fmt.Fprintln(stdout, f)
	}
	for _, f := range all.exempt {
		fmt.Fprintf(stdout, "exempt: %s (%s)\n", f, tableDirective)
	}
	if len(all.over) > 0 {
		fmt.Fprintf(stderr, "sizes: %d over the limits (files: %d lines, functions: %d lines; a data table: %s above it)\n",
			len(all.over), maxFileLines, maxFuncLines, tableDirective)
		return 1
	}
	return 0
}

// finding is a file or a function and its length in lines.
type finding struct {
	lines int
	file  string
	line  int    // 0 for a file
	name  string // Recv.Func, or empty for a file
}

func (f finding) String() string {
	if f.name == "" {
		return fmt.Sprintf("%d %s", f.lines, f.file)
	}
	return fmt.Sprintf("%d %s:%d %s", f.lines, f.file, f.line, f.name)
}

// result is what is over a limit, and the functions over it that a
// tableDirective exempted, in file order.
type result struct {
	over, exempt []finding
}

// check walks root and measures every Go file that is not a test or
// generated.
func check(root string) (result, error) {
	var r result
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && skipDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		return measure(fset, path, &r)
	})
	return r, err
}

func skipDir(name string) bool {
	return name == "vendor" || name == "testdata" || name == "bin" ||
		strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")
}

// measure parses the file at path and adds it, and each of its functions,
// to r when over a limit.
func measure(fset *token.FileSet, path string, r *result) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	f, err := parser.ParseFile(fset, path, src, parser.ParseComments|parser.SkipObjectResolution)
	if err != nil {
		return err
	}
	if ast.IsGenerated(f) {
		return nil
	}
	if n := fset.File(f.Pos()).LineCount(); n > maxFileLines {
		r.over = append(r.over, finding{lines: n, file: path})
	}
	for _, decl := range f.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		start, end := fset.Position(fn.Pos()), fset.Position(fn.End())
		n := end.Line - start.Line + 1
		if n <= maxFuncLines {
			continue
		}
		found := finding{lines: n, file: path, line: start.Line, name: funcName(fn)}
		if isTable(fn) {
			r.exempt = append(r.exempt, found)
		} else {
			r.over = append(r.over, found)
		}
	}
	return nil
}

// isTable reports whether fn's doc comment has the tableDirective on a
// line of its own.
func isTable(fn *ast.FuncDecl) bool {
	if fn.Doc == nil {
		return false
	}
	for _, c := range fn.Doc.List {
		if strings.TrimSpace(c.Text) == tableDirective {
			return true
		}
	}
	return false
}

// funcName is Func, or Recv.Func for a method (the receiver's type name,
// without a pointer or type parameters).
func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	return recvName(fn.Recv.List[0].Type) + "." + fn.Name.Name
}

func recvName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return recvName(t.X)
	case *ast.IndexExpr:
		return recvName(t.X)
	case *ast.IndexListExpr:
		return recvName(t.X)
	case *ast.ParenExpr:
		return recvName(t.X)
	case *ast.Ident:
		return t.Name
	}
	return "?"
}
