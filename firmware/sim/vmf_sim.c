/* Runs the compiled AVR firmware under simavr with its UART on a pseudo-terminal, so the host
 * (run_feedback.py --device serial:PATH) talks to the real binary.
 *
 *   vmf_sim [--link PATH] [--speed X] [--signal FILE] [--seed N] [--duration S] FIRMWARE.elf
 *
 * Prints the pty path as its first line. Then reads commands on stdin, one per line, and
 * answers each with one JSON line on stdout:
 *   stats              clock, UART bytes, stimulator pins and their history, interrupt cycles
 *   contact CH 0|1     drive channel CH's lead-off input (1 = electrode on, the default)
 *   quit               (also end of stdin, SIGTERM, or --duration) prints stats and exits
 *
 * What it models: a 16 MHz ATmega328P; AVCC 5 V; the EMG front end (x200, mid-rail) on ADC0/1
 * fed from a synthetic contraction signal or a text file (one line per sample period, mV at
 * the electrodes per channel); the lead-off pins; and a USB-serial bridge that, like a real
 * one, drops output nobody reads (no host bytes for 1 s) at frame boundaries, so a host that
 * opens the port sees whole frames. --speed 1 (default) keeps simulated time in step with wall
 * time; --speed 0 runs as fast as the host CPU allows.
 *
 * Every time in the stats is simulated time (cycles / F_CPU), so a watchdog latency measured
 * here is the firmware's, not this machine's scheduling.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <math.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <avr_adc.h>
#include <avr_ioport.h>
#include <avr_uart.h>
#include <sim_avr.h>
#include <sim_elf.h>
#include <sim_interrupts.h>
#include <sim_irq.h>

#define F_CPU 16000000ul
#define N_CH 2
#define OUT_RING (1u << 20)
#define IN_RING (1u << 16)
#define HOST_SILENT_S 1.0
#define MAX_EVENTS 4096
#define N_VECTORS 26
#define OCR2A_ADDR 0xB3
#define SIGNAL_MAX (1u << 22)

static const char *vector_names[N_VECTORS] = {
    "RESET", "INT0", "INT1", "PCINT0", "PCINT1", "PCINT2", "WDT", "TIMER2_COMPA", "TIMER2_COMPB",
    "TIMER2_OVF", "TIMER1_CAPT", "TIMER1_COMPA", "TIMER1_COMPB", "TIMER1_OVF", "TIMER0_COMPA",
    "TIMER0_COMPB", "TIMER0_OVF", "SPI_STC", "USART_RX", "USART_UDRE", "USART_TX", "ADC",
    "EE_READY", "ANALOG_COMP", "TWI", "SPM_READY"};

static avr_t *avr;
static int master_fd, slave_fd;
static double speed = 1.0;
static double wall0;
static volatile sig_atomic_t stop_requested;

/* UART, AVR -> host */
static uint8_t out_ring[OUT_RING];
static uint32_t out_head, out_tail;
static uint64_t bytes_out, bytes_out_dropped;
static int drop_mid_frame; /* the last byte dropped was inside a frame */
/* UART, host -> AVR */
static uint8_t in_ring[IN_RING];
static uint32_t in_head, in_tail;
static int xon = 1;
static uint64_t bytes_in;
static double last_host_byte_s = -1; /* simulated time the last host byte reached the UART */
static double host_heard_wall = -1e9;
static avr_irq_t *uart_irq;
static avr_irq_t *adc_irq;
static avr_irq_t *portd_irq;
static uint8_t lead_off; /* bit ch set: channel ch's lead-off input is HIGH (electrode off) */

/* Lead-off inputs as a front end drives them, over the firmware's pull-ups. */
static void drive_lead_off(void)
{
    avr_ioport_external_t ext;
    ext.name = 'D';
    ext.mask = 0x0C;
    ext.value = (uint8_t)(lead_off << 2);
    avr_ioctl(avr, AVR_IOCTL_IOPORT_SET_EXTERNAL('D'), &ext);
    for (int ch = 0; ch < N_CH; ch++) {
        avr_raise_irq(portd_irq + IOPORT_IRQ_PIN2 + ch, (lead_off >> ch) & 1u);
    }
}

/* stimulator pins */
static int enable_pin[N_CH];
static uint64_t pulses;
static double events_t[MAX_EVENTS];
static int events_kind[MAX_EVENTS]; /* 0..N_CH-1: enable rise, 10+ch: enable fall */
static double events_after_host[MAX_EVENTS];
static int events_amp[MAX_EVENTS];
static int n_events;

/* interrupts */
static avr_cycle_count_t isr_start[N_VECTORS];
static avr_cycle_count_t isr_max[N_VECTORS];
static uint64_t isr_count[N_VECTORS];

/* ADC input */
static float *file_signal;
static uint32_t file_samples;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double sample_rate = 2000.0;

static double now_s(void) { return (double)avr->cycle / (double)F_CPU; }

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* -- the signal ---------------------------------------------------------------------------- */

static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double gauss(void)
{
    return sqrt(-2.0 * log(uniform())) * cos(2.0 * M_PI * uniform());
}

/* Contraction envelope: 2 s rest, 3 s work with 0.3 s ramps, repeating; VL 30 ms behind VM. */
static double envelope(double t)
{
    double p = fmod(t, 5.0) - 2.0;
    if (p < 0) return 0.0;
    if (p < 0.3) return p / 0.3;
    if (p > 2.7) return (3.0 - p) / 0.3;
    return 1.0;
}

static double electrode_mv(int ch, double t)
{
    if (file_signal) {
        uint32_t i = (uint32_t)(t * sample_rate) % file_samples;
        return file_signal[i * N_CH + ch];
    }
    double rms = 0.01 + (ch == 0 ? 0.45 : 0.35) * envelope(t - (ch == 0 ? 0.0 : 0.03));
    return rms * gauss();
}

static void adc_trigger(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)param;
    union {
        avr_adc_mux_t mux;
        uint32_t v;
    } e = {.v = value};
    avr_adc_mux_t mux = e.mux;
    if (mux.kind != ADC_MUX_SINGLE || mux.src >= N_CH) return;
    double mv = 2500.0 + 200.0 * electrode_mv(mux.src, now_s());
    if (mv < 0) mv = 0;
    if (mv > 5000) mv = 5000;
    avr_raise_irq(adc_irq + ADC_IRQ_ADC0 + mux.src, (uint32_t)mv);
}

static int load_signal(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    file_signal = malloc(SIGNAL_MAX * N_CH * sizeof *file_signal);
    char line[256];
    while (file_samples < SIGNAL_MAX && fgets(line, sizeof line, f)) {
        float a, b = 0;
        int n = sscanf(line, "%f %f", &a, &b);
        if (n < 1) n = sscanf(line, "%f,%f", &a, &b);
        if (n < 1) continue;
        file_signal[file_samples * N_CH] = a;
        file_signal[file_samples * N_CH + 1] = b;
        file_samples++;
    }
    fclose(f);
    return file_samples ? 0 : -1;
}

/* -- pins and interrupts ------------------------------------------------------------------- */

static void record(int kind)
{
    if (n_events >= MAX_EVENTS) return;
    events_t[n_events] = now_s();
    events_kind[n_events] = kind;
    events_after_host[n_events] = last_host_byte_s < 0 ? -1 : now_s() - last_host_byte_s;
    events_amp[n_events] = avr->data[OCR2A_ADDR];
    n_events++;
}

static void enable_changed(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    int ch = (int)(intptr_t)param;
    if ((int)!!value == enable_pin[ch]) return;
    enable_pin[ch] = !!value;
    record(value ? ch : 10 + ch);
}

static void pulse_changed(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)param;
    if (value) pulses++;
}

static void isr_running(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    int v = (int)(intptr_t)param;
    if (value) {
        isr_start[v] = avr->cycle;
        isr_count[v]++;
    } else if (isr_start[v]) {
        avr_cycle_count_t d = avr->cycle - isr_start[v];
        if (d > isr_max[v]) isr_max[v] = d;
        isr_start[v] = 0;
    }
}

/* -- UART <-> pty -------------------------------------------------------------------------- */

static void uart_out(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)param;
    if (out_head - out_tail >= OUT_RING) { /* nobody reads fast enough: drop the oldest */
        bytes_out_dropped++;
        drop_mid_frame = out_ring[out_tail % OUT_RING] != 0;
        out_tail++;
    }
    out_ring[out_head++ % OUT_RING] = (uint8_t)value;
}

static void uart_xon(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    (void)param;
    xon = 1;
}

static void uart_xoff(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    (void)param;
    xon = 0;
}

static void push_input(void)
{
    while (xon && in_tail != in_head) {
        avr_raise_irq(uart_irq + UART_IRQ_INPUT, in_ring[in_tail++ % IN_RING]);
        bytes_in++;
        last_host_byte_s = now_s();
    }
}

static void service_pty(void)
{
    uint8_t buf[4096];
    double wall = wall_s();
    ssize_t n = read(master_fd, buf, sizeof buf);
    if (n > 0) {
        if (wall - host_heard_wall >= HOST_SILENT_S) {
            /* a host (re)opened the port: what waited for nobody is stale */
            drop_mid_frame = drop_mid_frame || (out_head != out_tail &&
                                                out_ring[(out_head - 1) % OUT_RING] != 0);
            bytes_out_dropped += out_head - out_tail;
            out_tail = out_head;
        }
        host_heard_wall = wall;
        for (ssize_t i = 0; i < n && in_head - in_tail < IN_RING; i++) {
            in_ring[in_head++ % IN_RING] = buf[i];
        }
    }
    push_input();
    int present = wall - host_heard_wall < HOST_SILENT_S;
    if (!present) {
        if (out_head != out_tail) {
            drop_mid_frame = out_ring[(out_head - 1) % OUT_RING] != 0;
            bytes_out_dropped += out_head - out_tail;
            out_tail = out_head;
            int unread = 0;
            if (ioctl(slave_fd, FIONREAD, &unread) == 0 && unread > 2048) {
                tcflush(slave_fd, TCIFLUSH);
            }
        }
        return;
    }
    while (drop_mid_frame && out_tail != out_head) { /* resume at a frame boundary */
        drop_mid_frame = out_ring[out_tail++ % OUT_RING] != 0;
        bytes_out_dropped++;
    }
    while (out_tail != out_head) {
        uint32_t start = out_tail % OUT_RING;
        uint32_t len = out_head - out_tail;
        if (len > OUT_RING - start) len = OUT_RING - start;
        ssize_t w = write(master_fd, out_ring + start, len);
        if (w <= 0) break;
        out_tail += (uint32_t)w;
        bytes_out += (uint64_t)w;
    }
}

/* -- commands and stats -------------------------------------------------------------------- */

static void print_stats(void)
{
    double wall = wall_s() - wall0;
    printf("{\"t_s\": %.6f, \"cycles\": %llu, \"f_cpu\": %lu, \"wall_s\": %.3f, ", now_s(),
           (unsigned long long)avr->cycle, F_CPU, wall);
    printf("\"uart_out\": %llu, \"uart_out_dropped\": %llu, \"uart_in\": %llu, ",
           (unsigned long long)bytes_out, (unsigned long long)bytes_out_dropped,
           (unsigned long long)bytes_in);
    printf("\"last_host_byte_s\": %.6f, \"enable\": [%d, %d], \"amplitude_pwm\": %d, ",
           last_host_byte_s, enable_pin[0], enable_pin[1], avr->data[OCR2A_ADDR]);
    printf("\"pulses\": %llu, \"state\": %d, \"events\": [", (unsigned long long)pulses,
           avr->state);
    for (int i = 0; i < n_events; i++) {
        printf("%s{\"t_s\": %.6f, \"channel\": %d, \"on\": %s, \"after_host_s\": %.6f, "
               "\"amplitude_pwm\": %d}",
               i ? ", " : "", events_t[i], events_kind[i] % 10,
               events_kind[i] < 10 ? "true" : "false", events_after_host[i], events_amp[i]);
    }
    printf("], \"isr\": {");
    int first = 1;
    for (int v = 1; v < N_VECTORS; v++) {
        if (!isr_count[v]) continue;
        printf("%s\"%s\": {\"count\": %llu, \"max_cycles\": %llu}", first ? "" : ", ",
               vector_names[v], (unsigned long long)isr_count[v],
               (unsigned long long)isr_max[v]);
        first = 0;
    }
    printf("}}\n");
    fflush(stdout);
}

static void command(char *line)
{
    int ch, on;
    if (strncmp(line, "stats", 5) == 0) {
        print_stats();
    } else if (sscanf(line, "contact %d %d", &ch, &on) == 2 && ch >= 0 && ch < N_CH) {
        lead_off = (uint8_t)(on ? lead_off & ~(1u << ch) : lead_off | (1u << ch));
        drive_lead_off();
        printf("{\"contact\": [%d, %d]}\n", ch, on);
        fflush(stdout);
    } else if (strncmp(line, "quit", 4) == 0) {
        stop_requested = 1;
    } else {
        printf("{\"error\": \"unknown command\"}\n");
        fflush(stdout);
    }
}

static void service_stdin(void)
{
    static char line[256];
    static size_t len;
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    while (poll(&p, 1, 0) > 0) {
        char c;
        ssize_t n = read(STDIN_FILENO, &c, 1);
        if (n <= 0) {
            stop_requested = 1; /* whoever started us is gone */
            return;
        }
        if (c == '\n') {
            line[len] = 0;
            command(line);
            len = 0;
        } else if (len < sizeof line - 1) {
            line[len++] = c;
        }
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* The AVR sleeps between interrupts; pacing happens in the main loop instead of usleep. */
static void no_sleep(avr_t *a, avr_cycle_count_t how_long)
{
    (void)a;
    (void)how_long;
}

int main(int argc, char **argv)
{
    const char *link = NULL, *signal_path = NULL, *elf = NULL;
    double duration = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--link") && i + 1 < argc) link = argv[++i];
        else if (!strcmp(argv[i], "--speed") && i + 1 < argc) speed = atof(argv[++i]);
        else if (!strcmp(argv[i], "--signal") && i + 1 < argc) signal_path = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) rng_state ^= strtoull(argv[++i], 0, 0) * 0x2545F4914F6CDD1Dull;
        else if (!strcmp(argv[i], "--duration") && i + 1 < argc) duration = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rate") && i + 1 < argc) sample_rate = atof(argv[++i]);
        else if (argv[i][0] != '-') elf = argv[i];
        else {
            fprintf(stderr, "usage: vmf_sim [--link PATH] [--speed X] [--signal FILE] [--seed N] "
                            "[--duration S] [--rate HZ] FIRMWARE.elf\n");
            return 2;
        }
    }
    if (!elf) {
        fprintf(stderr, "vmf_sim: no firmware ELF given\n");
        return 2;
    }
    if (signal_path && load_signal(signal_path) != 0) {
        fprintf(stderr, "vmf_sim: cannot read a signal from %s\n", signal_path);
        return 2;
    }
    /* simavr reports what it loaded on stdout; stdout is for the pty path and JSON only */
    int saved_stdout = dup(STDOUT_FILENO);
    dup2(STDERR_FILENO, STDOUT_FILENO);
    elf_firmware_t fw;
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(elf, &fw) != 0) {
        fprintf(stderr, "vmf_sim: cannot read %s\n", elf);
        return 2;
    }
    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr) return 2;
    avr_init(avr);
    avr->log = LOG_ERROR;
    avr_load_firmware(avr, &fw);
    fflush(stdout);
    dup2(saved_stdout, STDOUT_FILENO);
    close(saved_stdout);
    avr->frequency = F_CPU;
    avr->vcc = avr->avcc = avr->aref = 5000;
    avr->sleep = no_sleep;
    avr->log = LOG_ERROR;

    if (openpty(&master_fd, &slave_fd, NULL, NULL, NULL) != 0) {
        perror("openpty");
        return 2;
    }
    struct termios tio;
    tcgetattr(slave_fd, &tio);
    cfmakeraw(&tio);
    tcsetattr(slave_fd, TCSANOW, &tio);
    fcntl(master_fd, F_SETFL, fcntl(master_fd, F_GETFL) | O_NONBLOCK);
    const char *path = ptsname(master_fd);
    if (link) {
        unlink(link);
        if (symlink(path, link) != 0) {
            perror("symlink");
            return 2;
        }
        path = link;
    }

    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)AVR_UART_FLAG_STDIO;
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    uart_irq = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), 0);
    avr_irq_register_notify(uart_irq + UART_IRQ_OUTPUT, uart_out, NULL);
    avr_irq_register_notify(uart_irq + UART_IRQ_OUT_XON, uart_xon, NULL);
    avr_irq_register_notify(uart_irq + UART_IRQ_OUT_XOFF, uart_xoff, NULL);
    adc_irq = avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, 0);
    avr_irq_register_notify(adc_irq + ADC_IRQ_OUT_TRIGGER, adc_trigger, NULL);
    portd_irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 0);
    avr_irq_register_notify(portd_irq + IOPORT_IRQ_PIN6, enable_changed, (void *)0);
    avr_irq_register_notify(portd_irq + IOPORT_IRQ_PIN7, enable_changed, (void *)1);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), IOPORT_IRQ_PIN1),
                            pulse_changed, NULL);
    drive_lead_off(); /* electrodes on */
    for (int v = 1; v < N_VECTORS; v++) {
        avr_irq_t *irq = avr_get_interrupt_irq(avr, (uint8_t)v);
        if (irq) avr_irq_register_notify(irq + AVR_INT_IRQ_RUNNING, isr_running, (void *)(intptr_t)v);
    }

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    printf("%s\n", path);
    fflush(stdout);

    wall0 = wall_s();
    avr_cycle_count_t next_service = 0;
    const avr_cycle_count_t service_every = F_CPU / 10000; /* 100 us of simulated time */
    while (!stop_requested) {
        int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) {
            fprintf(stderr, "vmf_sim: the AVR stopped (state %d) at %.6f s\n", state, now_s());
            break;
        }
        if (avr->cycle < next_service) continue;
        next_service = avr->cycle + service_every;
        service_pty();
        service_stdin();
        if (duration > 0 && now_s() >= duration) break;
        if (speed > 0) {
            double ahead = now_s() / speed - (wall_s() - wall0);
            if (ahead > 0.001) {
                struct timespec ts = {0, (long)(ahead * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    }
    service_pty();
    print_stats();
    if (link) unlink(link);
    return 0;
}
