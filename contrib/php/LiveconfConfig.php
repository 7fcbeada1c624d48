<?php
/**
 * Reads a configuration file that liveconf keeps up to date, for
 * MediaWiki (or any PHP application). Reference code: copy it, adapt it.
 *
 * Two ways, the two of the design (see the README's "MediaWiki: reading
 * liveconf's files" section, /usr/share/doc/liveconf/README.md):
 *
 *   $cfg = LiveconfConfig::load('/srv/mediawiki/dbconfig.json');      // JSON + APCu
 *   $cfg = LiveconfConfig::includePhp('/srv/mediawiki/wmf-config/dbconfig.php'); // PHP + opcache
 *   header('X-Config-Sha256: ' . LiveconfConfig::meta($path)['sha256']);
 *   header('X-Config-Revision: ' . LiveconfConfig::meta($path)['revision']);
 *
 * The revision: when it parses a new file, it looks up the resource whose
 * dest is this path in liveconf's status.json (LiveconfConfig::setStatusFile(),
 * default /var/lib/liveconf/status.json, the state_dir's) and takes its
 * resources.NAME.revision when that entry's sha256 is the file's. liveconf
 * writes status.json a few ms after it renames the file into place: a file
 * read in between is not recorded yet. While the revision is unknown, each
 * read also stats status.json (one extra stat) and looks again only when
 * status.json's identity changed since the last look (the daemon replaces
 * it by rename, at least every 5 s); the revision found goes into the APCu
 * entry, so every later request has it at no extra cost. Until then (or
 * for a file status.json never records, or an unreadable status.json) the
 * revision is the document's own top-level "revision" (when the template
 * writes one), else null.
 *
 * JSON + APCu, per request: one stat() of the file and one apcu_fetch()
 * (and, while the file's revision is not known yet, one stat() of
 * status.json).
 * The file is read and parsed only when its identity changed (device,
 * inode, size, mtime, ctime): liveconf installs by rename(2), so every new
 * version is a new inode. A stat key cannot tell two versions apart when
 * the second is written in the same second as the first (same size, and an
 * inode number reused): as git does with its index, an entry parsed less
 * than a second after the file's mtime is "racy" and is checked against the
 * file's bytes (sha256) on each request until a later second has passed.
 *
 * Never a partial file: liveconf renames a complete file into place, and
 * the bytes parsed come from one open file (fstat of the same descriptor
 * gives the key). Never stale: the stat runs on every call (clearstatcache
 * first: PHP's stat cache would otherwise answer from an earlier call in the
 * same process). A missing, unreadable, empty or invalid file (or one that
 * is not a JSON object/array) keeps the last good copy in service: the error
 * goes to the $onError callback (a LiveconfConfigError) when one is given,
 * else to trigger_error(E_USER_WARNING); without any good copy, load()
 * throws the LiveconfConfigError.
 *
 * Without APCu (not loaded, or apc.enable_cli=0 on the command line) every
 * call reads and parses the file: correct, only slower.
 */

final class LiveconfConfigError extends RuntimeException
{
}

final class LiveconfConfig
{
    /** APCu key prefix. */
    private const PREFIX = 'liveconf:';

    /** What the last call in this request served, per path (meta()). */
    private static $meta = [];

    /** liveconf's status.json (STATE_DIR/status.json). */
    private static $statusFile = '/var/lib/liveconf/status.json';

    /** Where liveconf's status.json is (its state_dir, when not the default). */
    public static function setStatusFile(string $path): void
    {
        self::$statusFile = $path;
    }

    /**
     * The decoded JSON document at $path (an array), parsed only when the
     * file changed. $onError(LiveconfConfigError $e, string $path) hears of a
     * file that cannot be served while the last good copy is.
     */
    public static function load(string $path, ?callable $onError = null): array
    {
        clearstatcache(true, $path);
        $st = @stat($path);
        $apcu = self::apcu();
        $entry = $apcu ? apcu_fetch(self::PREFIX . $path) : false;
        if ($st !== false && is_array($entry) && $entry['key'] === self::key($st)) {
            $now = time();
            if ($entry['verified'] > $st['mtime'] || self::sameBytes($path, $entry)) {
                $changed = false;
                if ($entry['verified'] <= $st['mtime'] && $now > $st['mtime']) {
                    // Checked against the bytes in a later second: trusted from now on.
                    $entry['verified'] = $now;
                    $changed = true;
                }
                if (self::refreshRevision($path, $entry)) {
                    $changed = true;
                }
                if ($changed) {
                    apcu_store(self::PREFIX . $path, $entry);
                }
                return self::serve($path, $entry, $onError);
            }
        }
        $entry = self::parse($path, is_array($entry) ? $entry : null);
        if ($apcu) {
            apcu_store(self::PREFIX . $path, $entry);
        }
        return self::serve($path, $entry, $onError);
    }

    /**
     * The array a PHP file liveconf wrote returns (`return [...];`), through
     * opcache. opcache must see a replaced file: see the README for the
     * settings; with APCu, a new inode also invalidates the script in opcache
     * (opcache_invalidate), so even opcache.validate_timestamps=0 serves the
     * new file from the next request. A missing file, or one that returns no
     * array, is a LiveconfConfigError (liveconf's check_cmd `php -l` keeps a
     * broken file from being installed).
     */
    public static function includePhp(string $path): array
    {
        clearstatcache(true, $path);
        $st = @stat($path);
        if ($st === false) {
            throw new LiveconfConfigError("$path: cannot stat it (missing, or not readable)");
        }
        $key = self::key($st);
        $apcu = self::apcu();
        $sha = null;
        $revision = null;
        if ($apcu) {
            $entry = apcu_fetch(self::PREFIX . 'php:' . $path);
            $same = is_array($entry) && $entry['key'] === $key;
            $changed = false;
            if (!$same || $entry['verified'] <= $st['mtime']) {
                // A new file, or a racy entry (see load()): compare the bytes.
                $sha = @hash_file('sha256', $path) ?: null;
                if (!$same || $sha !== $entry['sha256']) {
                    if (function_exists('opcache_invalidate')) {
                        @opcache_invalidate($path, true);
                    }
                    [$revision, $status] = self::recordedRevision($path, $sha);
                    $entry = ['key' => $key, 'sha256' => $sha, 'revision' => $revision, 'status' => $status];
                }
                $entry['verified'] = time();
                $changed = true;
            }
            if (self::refreshRevision($path, $entry)) {
                $changed = true;
            }
            if ($changed) {
                apcu_store(self::PREFIX . 'php:' . $path, $entry);
            }
            $sha = $entry['sha256'];
            $revision = $entry['revision'] ?? null;
        }
        $data = (static function (string $p) {
            return include $p;
        })($path);
        if (!is_array($data)) {
            throw new LiveconfConfigError("$path: does not return an array");
        }
        self::$meta[$path] = [
            'sha256' => $sha,
            'revision' => $revision ?? self::revisionOf($data),
            'error' => null,
        ];
        return $data;
    }

    /**
     * What the last load()/includePhp() of $path in this request served:
     * 'sha256' (of the file's bytes: the sha256 `liveconf status` and
     * `liveconf fleet` show for the resource; null for includePhp without
     * APCu), 'revision' (the etcd revision liveconf's status.json records
     * for the file served — see the top of this file: null for the few ms
     * between liveconf's rename and its status.json write, filled in on the
     * next read after that; failing that the document's top-level
     * "revision", when the template writes one; else null; for includePhp,
     * from status.json only with APCu) and 'error'
     * (why the file on disk is not the one served, or null).
     */
    public static function meta(string $path): ?array
    {
        return self::$meta[$path] ?? null;
    }

    private static function apcu(): bool
    {
        return function_exists('apcu_enabled') && apcu_enabled();
    }

    /** The file's identity: a new one for every file liveconf installs. */
    private static function key(array $st): string
    {
        return $st['dev'] . ':' . $st['ino'] . ':' . $st['size'] . ':' . $st['mtime'] . ':' . $st['ctime'];
    }

    /** A racy entry: whether the file still holds the bytes it was parsed from. */
    private static function sameBytes(string $path, array $entry): bool
    {
        $sha = @hash_file('sha256', $path);
        return $sha !== false && $sha === $entry['file_sha256'];
    }

    /**
     * Reads and parses the file; on failure keeps $previous's last good
     * data, with the error (and the failing file's key, so a broken file is
     * not parsed again on every request).
     */
    private static function parse(string $path, ?array $previous): array
    {
        $now = time();
        $fh = @fopen($path, 'rb');
        if ($fh === false) {
            return self::failed($previous, null, '', "$path: cannot open it (missing, or not readable)");
        }
        $st = fstat($fh);
        $bytes = stream_get_contents($fh);
        fclose($fh);
        $key = $st === false ? null : self::key($st);
        $sha = hash('sha256', (string)$bytes);
        if ($bytes === false || $bytes === '') {
            return self::failed($previous, $key, $sha, "$path: empty or unreadable");
        }
        try {
            $data = json_decode($bytes, true, 512, JSON_THROW_ON_ERROR);
        } catch (JsonException $e) {
            return self::failed($previous, $key, $sha, "$path: not valid JSON ({$e->getMessage()}); a truncated or hand-edited file?");
        }
        if (!is_array($data)) {
            return self::failed($previous, $key, $sha, "$path: holds a JSON " . gettype($data) . ', not an object or array');
        }
        [$revision, $status] = self::recordedRevision($path, $sha);
        return [
            'key' => $key,
            'file_sha256' => $sha,
            'sha256' => $sha,
            'verified' => $now,
            'data' => $data,
            // Recorded in status.json, or null (serve() falls back to the document's).
            'revision' => $revision,
            // status.json's identity when the revision was looked up.
            'status' => $status,
            'error' => null,
        ];
    }

    /**
     * The entry of a file that cannot be served: $previous's data (the last
     * good copy), the error, and the failing file's key and hash, so that it
     * is not read again on every request.
     */
    private static function failed(?array $previous, ?string $key, string $fileSha, string $error): array
    {
        return [
            'key' => $key,
            'file_sha256' => $fileSha,
            'sha256' => $previous['sha256'] ?? null,
            'verified' => time(),
            'data' => $previous['data'] ?? null,
            'revision' => $previous['revision'] ?? null,
            'status' => $previous['status'] ?? null,
            'error' => $error,
        ];
    }

    private static function serve(string $path, array $entry, ?callable $onError): array
    {
        self::$meta[$path] = [
            'sha256' => $entry['sha256'],
            'revision' => $entry['revision'] ?? (is_array($entry['data']) ? self::revisionOf($entry['data']) : null),
            'error' => $entry['error'],
        ];
        if ($entry['error'] !== null) {
            $e = new LiveconfConfigError($entry['error'] . (is_array($entry['data'])
                ? '; serving the last good copy (sha256 ' . substr((string)$entry['sha256'], 0, 12) . ')'
                : '; no good copy to serve'));
            if (!is_array($entry['data'])) {
                throw $e;
            }
            if ($onError !== null) {
                $onError($e, $path);
            } else {
                trigger_error($e->getMessage(), E_USER_WARNING);
            }
        }
        return $entry['data'];
    }

    /**
     * The identity of status.json as it is now ('' when it cannot be
     * stat'ed): the look-up's answer holds for as long as it is unchanged.
     */
    private static function statusKey(): string
    {
        clearstatcache(true, self::$statusFile);
        $st = @stat(self::$statusFile);
        return $st === false ? '' : self::key($st);
    }

    /**
     * A cache entry whose revision is not known yet (the file was read
     * before liveconf recorded it in status.json): looks it up again when
     * status.json changed since the last look, and puts what it finds in
     * $entry. Whether $entry changed (to be stored). Costs one stat while
     * the revision is unknown, nothing once it is known.
     */
    private static function refreshRevision(string $path, array &$entry): bool
    {
        if (($entry['revision'] ?? null) !== null || ($entry['sha256'] ?? null) === null) {
            return false;
        }
        if (self::statusKey() === ($entry['status'] ?? null)) {
            return false;
        }
        [$entry['revision'], $entry['status']] = self::recordedRevision($path, $entry['sha256']);
        return true;
    }

    /**
     * [the revision liveconf's status.json records for the resource whose
     * dest is $path, when its sha256 is $sha (the file's), or null when
     * there is no such resource, the file is not (yet) the one recorded, or
     * status.json cannot be read; the identity of the status.json read
     * (statusKey()), from the descriptor the bytes came from].
     */
    private static function recordedRevision(string $path, ?string $sha): array
    {
        if ($sha === null) {
            return [null, null];
        }
        $fh = @fopen(self::$statusFile, 'rb');
        if ($fh === false) {
            // Missing, or not readable by this user: tried again when it changes.
            return [null, self::statusKey()];
        }
        $st = fstat($fh);
        $bytes = stream_get_contents($fh);
        fclose($fh);
        $key = $st === false ? null : self::key($st);
        if ($bytes === false) {
            return [null, $key];
        }
        $status = json_decode($bytes, true);
        if (!is_array($status) || !is_array($status['resources'] ?? null)) {
            return [null, $key];
        }
        $real = realpath($path) ?: $path;
        foreach ($status['resources'] as $res) {
            if (!is_array($res) || !is_string($res['dest'] ?? null)) {
                continue;
            }
            if ($res['dest'] !== $path && (realpath($res['dest']) ?: $res['dest']) !== $real) {
                continue;
            }
            if (($res['sha256'] ?? null) === $sha && is_int($res['revision'] ?? null)) {
                return [$res['revision'], $key];
            }
        }
        return [null, $key];
    }

    private static function revisionOf(array $data): ?int
    {
        return isset($data['revision']) && is_int($data['revision']) ? $data['revision'] : null;
    }
}
