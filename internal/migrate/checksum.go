package migrate

import (
	"bytes"
	"hash/crc32"
)

// FlywayChecksum is the checksum Flyway stores for a SQL migration: CRC32
// over the UTF-8 bytes of each line without its terminator (\n, \r or
// \r\n), with a leading byte-order mark removed, as a signed 32-bit int.
func FlywayChecksum(script []byte) int32 {
	script = bytes.TrimPrefix(script, []byte("\xef\xbb\xbf"))
	h := crc32.NewIEEE()
	for len(script) > 0 {
		i := bytes.IndexAny(script, "\r\n")
		if i < 0 {
			h.Write(script)
			break
		}
		h.Write(script[:i])
		if script[i] == '\r' && i+1 < len(script) && script[i+1] == '\n' {
			i++
		}
		script = script[i+1:]
	}
	return int32(h.Sum32())
}
