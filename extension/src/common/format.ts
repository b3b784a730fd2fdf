/** How the extension words the protocol's numbers and times: hardware, RTT, expiry, sizes,
 * backups. */
import type { Backup, Environment, Hardware } from '../protocol/generated';

/** `4 CPU · 16 GiB`, with `· 1 GPU` when there are GPUs. */
export function hardwareLabel(hardware: Hardware): string {
  const parts = [`${hardware.cpus} CPU`, `${hardware.memoryGib} GiB`];
  if (hardware.gpus > 0) parts.push(`${hardware.gpus} GPU`);
  return parts.join(' · ');
}

/** `12 ms`; `<1 ms` on a fast link; `no answer` when the probe got none. */
export function rttLabel(rttMs: number | null | undefined): string {
  if (rttMs === null || rttMs === undefined || !Number.isFinite(rttMs)) return 'no answer';
  if (rttMs < 1) return '<1 ms';
  return `${Math.round(rttMs)} ms`;
}

/** `expires in 8 h`, `expires in 3 days`, `expired`, `permanent`. */
export function expiryLabel(
  environment: Pick<Environment, 'lifespan' | 'expiresAt'>,
  now: Date,
): string {
  if (environment.lifespan === 'permanent') return 'permanent';
  if (environment.expiresAt === null) return 'no expiry';
  const ms = Date.parse(environment.expiresAt) - now.getTime();
  if (Number.isNaN(ms)) return 'no expiry';
  if (ms <= 0) return 'expired';
  const minutes = Math.round(ms / 60_000);
  if (minutes < 60) return `expires in ${Math.max(minutes, 1)} min`;
  const hours = Math.round(ms / 3_600_000);
  if (hours < 48) return `expires in ${hours} h`;
  return `expires in ${Math.round(ms / 86_400_000)} days`;
}

/** A timestamp as the user's locale writes it; the text itself when it is not one. */
export function timeLabel(iso: string | null): string {
  if (iso === null) return 'never';
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? iso : at.toLocaleString();
}

/** The message of anything thrown: the daemon's JSON-RPC errors carry one sentence. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  if (typeof error === 'string') return error;
  return String(error);
}

/** `512 B`, `48 KiB`, `5.3 MiB`, `1.2 GiB` (binary units, as `du -h` and restic count). */
export function sizeLabel(bytes: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  if (!Number.isFinite(bytes) || bytes < 1024) return `${Math.max(Math.round(bytes), 0)} B`;
  let value = bytes;
  let unit = 'B';
  for (const next of units) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${unit}`;
}

/** `45 min`, `2 h`, `1 h 30 min`, `3 days`: a whole number of minutes, roughly. */
export function minutesLabel(minutes: number): string {
  if (minutes < 60) return `${Math.round(minutes)} min`;
  if (minutes < 48 * 60) {
    const hours = Math.floor(minutes / 60);
    const rest = Math.round(minutes % 60);
    return rest === 0 ? `${hours} h` : `${hours} h ${rest} min`;
  }
  return `${Math.round(minutes / (24 * 60))} days`;
}

/** `1/1/2030, 11:29:50 AM · 5.3 MiB · 1,234 files`; a running one's percentage instead; a
 * failed one's time alone. */
export function backupLabel(backup: Backup): string {
  const when = timeLabel(backup.startedAt);
  switch (backup.state) {
    case 'succeeded':
      return `${when} · ${sizeLabel(backup.totalBytes)} · ${backup.totalFiles.toLocaleString()} files`;
    case 'running':
      return `${when} · ${Math.floor(backup.progress * 100)}%`;
    case 'failed':
      return when;
  }
}
