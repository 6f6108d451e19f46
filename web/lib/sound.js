// Audio cues through WebAudio: short tones, one pattern per cue, as the buzzer's patterns
// (feedback/dashboard/cue_renderer.py BUZZ) so a patient who cannot watch the screen still knows.
// Browsers only let sound start after a tap, hence the page's "Sound" button.

// [pulses, ms per pulse, pitch Hz]
export const TONES = {
  "zone:below": [1, 150, 330],
  "zone:above": [3, 90, 220],
  "zone:in_band": [1, 90, 880],
  "rep:*": [2, 120, 660],
  "phase:work": [1, 400, 523],
  "phase:rest": [1, 300, 392],
  "phase:done": [3, 300, 784],
};

export class Sound {
  constructor() {
    this.ctx = null;
    this.played = []; // [kind:value, ...] of every pattern played, for the page's tests
  }

  get on() { return this.ctx !== null && this.ctx.state === "running"; }

  async toggle() {
    if (this.on) {
      await this.ctx.suspend();
      return false;
    }
    this.ctx = this.ctx || new AudioContext();
    await this.ctx.resume();
    this.beep(1, 80, 660); // the tap is answered: sound works
    return true;
  }

  cue(kind, value) {
    const key = `${kind}:${value}`;
    const tone = TONES[key] || TONES[`${kind}:*`];
    if (!tone || !this.on) return false;
    this.played.push(key);
    this.beep(...tone);
    return true;
  }

  beep(pulses, ms, hz) {
    const t0 = this.ctx.currentTime + 0.01;
    for (let i = 0; i < pulses; i++) {
      const start = t0 + (i * 2 * ms) / 1000;
      const osc = this.ctx.createOscillator();
      const gain = this.ctx.createGain();
      osc.frequency.value = hz;
      gain.gain.setValueAtTime(0, start);
      gain.gain.linearRampToValueAtTime(0.4, start + 0.01); // no click at the edges
      gain.gain.setValueAtTime(0.4, start + ms / 1000 - 0.01);
      gain.gain.linearRampToValueAtTime(0, start + ms / 1000);
      osc.connect(gain).connect(this.ctx.destination);
      osc.start(start);
      osc.stop(start + ms / 1000 + 0.02);
    }
  }
}
