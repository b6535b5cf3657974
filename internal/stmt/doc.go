// Package stmt compiles pgtenant's SQL templates. A template is SQL text
// with two kinds of holes:
//
//   - {part} is replaced by a piece of SQL that pgtenant itself built:
//     quoted, validated identifiers (schema.Table.Sanitize) or fixed
//     fragments such as the registry guard. Never a value.
//   - @name is a parameter. Compile numbers the parameters in order of
//     first appearance ($1, $2, ...) and records which field of a values
//     struct each position binds, so that a call sets fields by name and
//     Args lays them out.
//
// Compiling happens once per statement and target; a call only copies its
// values into an argument slice. Holes inside quoted strings and quoted
// identifiers are left alone.
package stmt
