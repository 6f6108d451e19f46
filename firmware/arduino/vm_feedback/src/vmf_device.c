/* The device: host messages in, samples and replies out, and the stimulation state machine with
 * its own hard caps, contact check, latched emergency stop and watchdog.
 *
 * It follows firmware_bridge/emulator.py step for step (same refusal order, same Status per
 * state entered, same watchdog rule), with integer milliseconds where the emulator has float
 * seconds. Times are compared as signed differences so the 49-day wrap of now_ms is harmless.
 */
#include "vmf.h"

#define AFTER(a, b) ((int32_t)((uint32_t)(a) - (uint32_t)(b)) > 0) /* a later than b */

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | ((uint16_t)p[1] << 8));
}

static uint32_t all_channels(uint8_t n)
{
    return n >= 32 ? 0xFFFFFFFFul : (((uint32_t)1 << n) - 1u);
}

static void send_status(vmf_device *dev)
{
    dev->sent_state = dev->state;
    dev->sent_battery = dev->battery_pct;
    dev->sent_contact = dev->contact;
    dev->last_status_ms = dev->now_ms;
    dev->status_ever = 1;
    vmf_send_status(dev, dev->battery_pct, dev->state, dev->cfg->n_channels, dev->contact);
}

/* One Status per state entered, so the host never misses a state between two polls. */
static void status_if_changed(vmf_device *dev)
{
    if (dev->state != dev->sent_state || dev->contact != dev->sent_contact ||
        dev->battery_pct != dev->sent_battery) {
        send_status(dev);
    }
}

static void stop(vmf_device *dev, uint8_t state, uint32_t at_ms)
{
    if (dev->burst_running) {
        dev->rest_from_ms = at_ms;
        dev->have_rest = 1;
    }
    dev->burst_running = 0;
    dev->state = state;
}

static uint32_t burst_ms(const vmf_burst *b)
{
    return (uint32_t)b->ramp_up_ms + b->hold_ms + b->ramp_down_ms;
}

/* Moves the burst on to now_ms. */
static void tick(vmf_device *dev)
{
    static const uint8_t phase_state[3] = {VMF_RAMP_UP, VMF_HOLD, VMF_RAMP_DOWN};
    const vmf_burst *b = &dev->burst;
    uint16_t durations[3];
    uint32_t end, deadline;
    uint8_t p;
    if (!dev->burst_running) {
        return;
    }
    if (!(dev->contact & ((uint32_t)1 << b->channel))) {
        stop(dev, VMF_IDLE, dev->now_ms);
        status_if_changed(dev);
        return;
    }
    durations[0] = b->ramp_up_ms;
    durations[1] = b->hold_ms;
    durations[2] = b->ramp_down_ms;
    deadline = dev->last_host_ms + VMF_WATCHDOG_MS;
    end = b->start_ms;
    for (p = 0; p < dev->phase; p++) {
        end += durations[p];
    }
    while (dev->phase < 3) {
        p = dev->phase;
        if (durations[p] == 0) {
            dev->phase++;
            continue;
        }
        end += durations[p];
        /* The host went quiet before this phase was due to end: stop, as of the deadline. */
        if (AFTER(end, deadline) && AFTER(dev->now_ms, deadline)) {
            dev->stats.watchdog_trips++;
            stop(dev, VMF_STOPPED_WATCHDOG, deadline);
            status_if_changed(dev);
            return;
        }
        dev->state = phase_state[p];
        status_if_changed(dev);
        if (AFTER(end, dev->now_ms)) {
            return;
        }
        dev->phase++;
    }
    dev->burst_running = 0;
    dev->state = VMF_IDLE;
    dev->rest_from_ms = b->start_ms + burst_ms(b);
    dev->have_rest = 1;
    status_if_changed(dev);
}

/* The firmware's own checks, safety first: a refusal names the first that fails. */
static uint8_t refusal(const vmf_device *dev, const vmf_burst *c)
{
    if (dev->estop_latched) {
        return VMF_REFUSE_ESTOP_LATCHED;
    }
    if (c->channel >= dev->cfg->n_channels) {
        return VMF_REFUSE_BAD_CHANNEL;
    }
    if (c->amplitude_dma > VMF_MAX_AMPLITUDE_DMA) {
        return VMF_REFUSE_AMPLITUDE;
    }
    if (c->pulse_width_us < 1u || c->pulse_width_us > VMF_MAX_PULSE_WIDTH_US) {
        return VMF_REFUSE_PULSE_WIDTH;
    }
    if (c->frequency_hz < VMF_MIN_FREQUENCY_HZ || c->frequency_hz > VMF_MAX_FREQUENCY_HZ) {
        return VMF_REFUSE_FREQUENCY;
    }
    if (burst_ms(c) > VMF_MAX_BURST_MS) {
        return VMF_REFUSE_BURST_TOO_LONG;
    }
    if (dev->burst_running) {
        return VMF_REFUSE_BUSY;
    }
    if (dev->have_rest && AFTER(dev->rest_from_ms + VMF_MIN_REST_MS, dev->now_ms)) {
        return VMF_REFUSE_TOO_SOON;
    }
    if (!(dev->contact & ((uint32_t)1 << c->channel))) {
        return VMF_REFUSE_NO_CONTACT;
    }
    return 0;
}

static void command(vmf_device *dev, const uint8_t *body)
{
    vmf_burst c;
    uint8_t reason;
    c.command_id = get_u32(body);
    c.channel = body[4];
    c.amplitude_dma = get_u16(body + 5);
    c.pulse_width_us = get_u16(body + 7);
    c.frequency_hz = get_u16(body + 9);
    c.ramp_up_ms = get_u16(body + 11);
    c.hold_ms = get_u16(body + 13);
    c.ramp_down_ms = get_u16(body + 15);
    c.start_ms = dev->now_ms;
    reason = refusal(dev, &c);
    if (reason != 0) {
        dev->stats.commands_refused++;
        vmf_send_refused(dev, c.command_id, reason);
        return;
    }
    dev->stats.commands_accepted++;
    dev->burst = c;
    dev->burst_running = 1;
    dev->phase = 0;
    vmf_send_u32(dev, VMF_MSG_STIM_ACK, c.command_id);
    tick(dev); /* enters the first phase and reports it */
}

/* The body length each host message must have; -1 for types a host may not send. */
static int host_body_len(uint8_t msg_type)
{
    switch (msg_type) {
    case VMF_MSG_STIM_COMMAND:
        return 17;
    case VMF_MSG_HEARTBEAT:
        return 4;
    case VMF_MSG_INFO_REQUEST:
    case VMF_MSG_ESTOP:
    case VMF_MSG_ESTOP_CLEAR:
        return 0;
    default:
        return -1;
    }
}

static int known_type(uint8_t msg_type)
{
    switch (msg_type) {
    case VMF_MSG_DEVICE_INFO:
    case VMF_MSG_SAMPLE_FRAME:
    case VMF_MSG_STATUS:
    case VMF_MSG_STIM_ACK:
    case VMF_MSG_STIM_REFUSED:
    case VMF_MSG_ESTOP_ACK:
    case VMF_MSG_DEVICE_ERROR:
        return 1;
    default:
        return host_body_len(msg_type) >= 0;
    }
}

/* Same order of checks as firmware_bridge.Connection: version, type, direction, layout. */
static uint8_t classify(const vmf_frame *f)
{
    int want;
    if (f->error != VMF_RX_OK) {
        return f->error;
    }
    if (f->version != VMF_PROTOCOL_VERSION) {
        return VMF_RX_UNSUPPORTED_VERSION;
    }
    if (!known_type(f->msg_type)) {
        return VMF_RX_UNKNOWN_TYPE;
    }
    want = host_body_len(f->msg_type);
    if (want < 0) {
        return VMF_RX_WRONG_DIRECTION;
    }
    if (f->body_len != (uint16_t)want) {
        return VMF_RX_MALFORMED;
    }
    return VMF_RX_OK;
}

static void handle(vmf_device *dev, const vmf_frame *f)
{
    switch (f->msg_type) {
    case VMF_MSG_HEARTBEAT:
        vmf_send_u32(dev, VMF_MSG_HEARTBEAT, get_u32(f->body));
        break;
    case VMF_MSG_INFO_REQUEST:
        vmf_send_device_info(dev);
        break;
    case VMF_MSG_ESTOP:
        /* Output off first: the board applies vmf_stim_output_now() after this returns, and
         * nothing below can fail or wait. */
        dev->stats.estops++;
        dev->estop_latched = 1;
        stop(dev, VMF_STOPPED_ESTOP, dev->now_ms);
        vmf_send_empty(dev, VMF_MSG_ESTOP_ACK);
        break;
    case VMF_MSG_ESTOP_CLEAR:
        dev->estop_latched = 0;
        if (dev->state == VMF_STOPPED_ESTOP || dev->state == VMF_STOPPED_WATCHDOG) {
            dev->state = VMF_IDLE;
        }
        send_status(dev); /* the host's confirmation that it is re-armed */
        break;
    case VMF_MSG_STIM_COMMAND:
        command(dev, f->body);
        break;
    default:
        break;
    }
}

int vmf_init(vmf_device *dev, const vmf_device_config *cfg, vmf_io io, uint32_t now_ms)
{
    uint8_t *p = (uint8_t *)dev;
    size_t i;
    uint32_t step;
    if (cfg->n_channels < 1 || cfg->n_channels > VMF_MAX_CHANNELS || cfg->n_channels > 32 ||
        cfg->samples_per_frame < 1 || cfg->samples_per_frame > VMF_MAX_SAMPLES_PER_FRAME ||
        cfg->adc_bits < 2 || cfg->adc_bits > 16 || cfg->sample_rate_hz == 0) {
        return -1;
    }
    for (i = 0; i < sizeof *dev; i++) {
        p[i] = 0;
    }
    vmf_rx_reset(&dev->rx);
    dev->cfg = cfg;
    dev->io = io;
    dev->now_ms = now_ms;
    dev->contact = all_channels(cfg->n_channels);
    dev->battery_pct = 100;
    dev->sent_state = dev->state;
    dev->sent_contact = dev->contact;
    dev->sent_battery = dev->battery_pct;
    step = (uint32_t)cfg->samples_per_frame * 1000000ul;
    dev->time_step_us = step / cfg->sample_rate_hz;
    dev->time_step_frac = step % cfg->sample_rate_hz;
    dev->time_frac = cfg->sample_rate_hz / 2u; /* rounds to the nearest microsecond */
    return 0;
}

void vmf_hello(vmf_device *dev)
{
    vmf_send_device_info(dev);
}

void vmf_sample_push(vmf_device *dev, const int16_t *values)
{
    const vmf_device_config *cfg = dev->cfg;
    int16_t hi = (int16_t)((1 << (cfg->adc_bits - 1)) - 1);
    int16_t lo = (int16_t)(-hi - 1);
    int16_t *dst;
    uint8_t c;
    if (dev->fill_n == 0) {
        dev->block_first[dev->fill] = dev->samples_taken;
    }
    dst = &dev->block[dev->fill][dev->fill_n * cfg->n_channels];
    for (c = 0; c < cfg->n_channels; c++) {
        int16_t v = values[c];
        if (v > hi || v < lo) {
            v = v > hi ? hi : lo;
            dev->clipped_isr++;
        }
        dst[c] = v;
    }
    dev->samples_taken++;
    if (++dev->fill_n < cfg->samples_per_frame) {
        return;
    }
    dev->fill_n = 0;
    if (dev->ready) {
        /* The main loop has not sent the last block: this one is lost, but the counter moved
         * on, so the host sees exactly how many samples are missing. */
        dev->dropped_isr += cfg->samples_per_frame;
        dev->overrun_pending = 1;
        return;
    }
    dev->fill ^= 1u;
    dev->ready = 1;
}

static void send_block(vmf_device *dev)
{
    const vmf_device_config *cfg = dev->cfg;
    uint8_t b = (uint8_t)(dev->fill ^ 1u); /* stable: the interrupt only flips fill when !ready */
    uint32_t first = dev->block_first[b];
    uint16_t raw = (uint16_t)(VMF_HEADER_SIZE + 14u + 2u * cfg->n_channels * cfg->samples_per_frame +
                              VMF_CRC_SIZE);
    if (dev->io.tx_free(dev->io.ctx) < raw + raw / 254u + 2u) {
        return; /* wait for the UART: the interrupt keeps filling the other block */
    }
    while (dev->time_next_first != first) { /* skip the time of blocks lost to overruns */
        dev->time_us += dev->time_step_us;
        dev->time_frac += dev->time_step_frac;
        if (dev->time_frac >= cfg->sample_rate_hz) {
            dev->time_frac -= cfg->sample_rate_hz;
            dev->time_us++;
        }
        dev->time_next_first += cfg->samples_per_frame;
    }
    /* time_us holds the start of block `first` plus half a sample period's rounding */
    vmf_send_samples(dev, first, dev->time_us, cfg->n_channels, cfg->samples_per_frame,
                     dev->block[b]);
    dev->stats.samples_sent += cfg->samples_per_frame;
    dev->ready = 0;
}

void vmf_poll(vmf_device *dev, uint32_t now_ms)
{
    dev->now_ms = now_ms;
    tick(dev);
    if (dev->ready) {
        send_block(dev);
    }
    dev->stats.samples_clipped = dev->clipped_isr;
    dev->stats.samples_dropped = dev->dropped_isr;
    if (dev->overrun_pending && vmf_send_device_error(dev, VMF_ERR_ADC_OVERRUN, "ADC overrun")) {
        dev->overrun_pending = 0;
    }
    if (!dev->status_ever || !AFTER(dev->last_status_ms + VMF_STATUS_INTERVAL_MS, now_ms)) {
        send_status(dev);
    } else {
        status_if_changed(dev);
    }
}

void vmf_receive(vmf_device *dev, const uint8_t *data, uint16_t len, uint32_t now_ms)
{
    vmf_frame f;
    uint16_t i;
    uint8_t kind;
    dev->now_ms = now_ms;
    tick(dev); /* the watchdog may have expired before these bytes arrived */
    for (i = 0; i < len; i++) {
        if (!vmf_rx_byte(&dev->rx, data[i], &f)) {
            continue;
        }
        kind = classify(&f);
        if (kind != VMF_RX_OK) {
            dev->stats.rx_errors[kind]++; /* counted; garbage must not feed the watchdog */
            continue;
        }
        dev->stats.host_frames_ok++;
        dev->last_host_ms = now_ms;
        dev->have_host = 1;
        handle(dev, &f);
    }
    status_if_changed(dev);
}

void vmf_set_contact(vmf_device *dev, uint8_t channel, uint8_t ok)
{
    uint32_t bit = (uint32_t)1 << channel;
    if (channel >= dev->cfg->n_channels) {
        return;
    }
    dev->contact = ok ? (dev->contact | bit) : (dev->contact & ~bit);
}

void vmf_set_battery(vmf_device *dev, uint8_t pct)
{
    dev->battery_pct = pct > 100 ? 100 : pct;
}

vmf_stim_output vmf_stim_output_now(const vmf_device *dev)
{
    vmf_stim_output out = {0, 0, 0, 0, 0};
    const vmf_burst *b = &dev->burst;
    uint32_t elapsed, amp, total;
    if (!dev->burst_running ||
        (dev->state != VMF_RAMP_UP && dev->state != VMF_HOLD && dev->state != VMF_RAMP_DOWN)) {
        return out;
    }
    elapsed = dev->now_ms - b->start_ms;
    total = burst_ms(b);
    if (elapsed > total) {
        elapsed = total;
    }
    amp = b->amplitude_dma;
    if (dev->state == VMF_RAMP_UP) {
        amp = elapsed >= b->ramp_up_ms ? amp : amp * elapsed / b->ramp_up_ms;
    } else if (dev->state == VMF_RAMP_DOWN) {
        amp = amp * (total - elapsed) / b->ramp_down_ms;
    }
    out.active = 1;
    out.channel = b->channel;
    out.amplitude_dma = (uint16_t)(amp > b->amplitude_dma ? b->amplitude_dma : amp);
    out.pulse_width_us = b->pulse_width_us;
    out.frequency_hz = b->frequency_hz;
    return out;
}
