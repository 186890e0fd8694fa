// Command chameleon is a templating function modelled on the chameleon
// benchmark: it renders an HTML table through html/template, whose
// contextual escaping does the heavy lifting. The result is the SHA-256
// digest of the rendered page. KINDLING_SIZE is the number of table rows
// (small: 100, medium: 1000, large: 10000); each row has 10 cells.
package main

import (
	"bytes"
	"html/template"
	"strconv"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const name = "chameleon"

const page = `<!DOCTYPE html>
<html>
<head><title>{{.Title}}</title></head>
<body>
<table>
{{- range $i, $row := .Rows}}
<tr class="{{if eq (rem $i 2) 0}}even{{else}}odd{{end}}">
{{- range $row}}<td title="{{.}}"><a href="/cell?v={{.}}">{{.}}</a></td>{{end -}}
</tr>
{{- end}}
</table>
</body>
</html>
`

func init() { harness.Register(name, run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	rows := harness.Size(name, 100, 1000, 10000)

	tmpl, err := template.New("table").Funcs(template.FuncMap{
		"rem": func(a, b int) int { return a % b },
	}).Parse(page)
	if err != nil {
		harness.Fail(name, "parsing template: "+err.Error())
	}

	data := struct {
		Title string
		Rows  [][]string
	}{Title: "Table <" + strconv.Itoa(rows) + " rows> & more", Rows: make([][]string, rows)}
	for i := range data.Rows {
		row := make([]string, 10)
		for j := range row {
			// Cells carry characters that must be escaped in each context.
			row[j] = strconv.Itoa(i*10+j) + ` <"cell" & 'value'>`
		}
		data.Rows[i] = row
	}

	var out bytes.Buffer
	if err := tmpl.Execute(&out, data); err != nil {
		harness.Fail(name, "rendering: "+err.Error())
	}
	harness.Emit(name, harness.Digest(out.Bytes()))
}
