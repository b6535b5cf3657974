// Package conformance is the behaviour every pgtenant datastorage.Backend
// shares, as one reusable suite: Exercise runs it against any constructor,
// the way River's riverdrivertest exercises each driver. backend.Factory's
// Backend passes it, and so does the tenant router in every isolation mode.
package conformance
