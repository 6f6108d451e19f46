/* ATmega328P board layer (Arduino Uno / Nano at 16 MHz): ADC, UART, timers, stimulator pins.
 *
 * Pins (Arduino names in brackets; firmware/README.md has the wiring):
 *   PC0 [A0], PC1 [A1]   EMG channel 0 (VM), 1 (VL): front-end output, mid-rail at rest
 *   PD2 [D2], PD3 [D3]   lead-off of channel 0, 1: HIGH = electrode off (AD8232 LO+ | LO-);
 *                        pulled up, so no front end means no contact and no stimulation
 *   PD6 [D6], PD7 [D7]   stimulator enable of channel 0, 1: HIGH only while a burst runs
 *   PB1 [D9]             stimulation pulse train (HIGH for pulse_width_us every 1/frequency)
 *   PB3 [D11]            amplitude setpoint, 62.5 kHz PWM (OC2A): duty 255 = 60.0 mA
 *   PB5 [D13]            LED: on while stimulating
 *   PD0 [D0], PD1 [D1]   UART to the host (the Uno's USB bridge), VMF_BAUD, 8N1
 *
 * Timer1 ticks at the sample rate and starts the first conversion; the ADC interrupt walks the
 * channels and hands a complete sample set to the core. Timer0 times the stimulation pulses,
 * Timer2 is the setpoint PWM. The hardware watchdog resets the MCU (all pins high-Z: the
 * stimulator's enable inputs need pull-downs) if the main loop stalls for 250 ms.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <avr/wdt.h>
#include <util/atomic.h>

#include "vmf.h"

#ifndef VMF_BAUD
#define VMF_BAUD 500000UL
#endif
#ifndef VMF_RATE_HZ
#define VMF_RATE_HZ 2000u
#endif
#ifndef VMF_N_CHANNELS
#define VMF_N_CHANNELS 2
#endif
#ifndef VMF_LSB_NV
/* 5 V / 1024 counts through a x200 front end (MyoWare-class raw output): 24.4 uV per count */
#define VMF_LSB_NV 24414u
#endif
#ifndef VMF_SERIAL
#define VMF_SERIAL "VMF-AVR-0001"
#endif

#define TX_SIZE 256u /* one 20-sample frame is ~100 bytes on the wire */
#define RX_SIZE 64u
#define TIMER1_TOP ((F_CPU / 8u / VMF_RATE_HZ) - 1u)
#define PULSE_TICK_US 4u /* Timer0 at F_CPU / 64 */
#define ERR_WATCHDOG_RESET 5u

#if TIMER1_TOP > 65535u || TIMER1_TOP < 200u || (F_CPU / 8u) % VMF_RATE_HZ != 0u
#error "VMF_RATE_HZ must divide F_CPU / 8 and give Timer1 a TOP of 200..65535"
#endif
/* 13 ADC clocks per conversion at F_CPU / 128, one conversion per channel per sample */
#if VMF_RATE_HZ * VMF_N_CHANNELS * 13ul * 128ul > F_CPU
#error "the ADC cannot convert VMF_N_CHANNELS channels at VMF_RATE_HZ"
#endif

static const char *const roles[] = {"VM", "VL", "C2", "C3"};
static const vmf_device_config config = {
    1, 0, 0, VMF_RATE_HZ, VMF_LSB_NV, 10, VMF_N_CHANNELS, VMF_MAX_SAMPLES_PER_FRAME,
    VMF_SERIAL, roles};

static vmf_device dev;

/* -- UART: interrupt-driven rings; the head of each is written by one side only ------------- */

static uint8_t tx_buf[TX_SIZE];
static volatile uint8_t tx_head, tx_tail;
static uint8_t rx_buf[RX_SIZE];
static volatile uint8_t rx_head, rx_tail;
static volatile uint8_t rx_overflows;

static void uart_init(void)
{
    UCSR0A = _BV(U2X0);
    UBRR0 = (uint16_t)((F_CPU + 4u * VMF_BAUD) / (8u * VMF_BAUD) - 1u);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
}

ISR(USART_RX_vect)
{
    uint8_t byte = UDR0;
    uint8_t next = (uint8_t)((rx_head + 1u) % RX_SIZE);
    if (next == rx_tail) {
        rx_overflows++; /* the frame it belonged to fails its CRC and is counted by the core */
        return;
    }
    rx_buf[rx_head] = byte;
    rx_head = next;
}

ISR(USART_UDRE_vect)
{
    if (tx_tail == tx_head) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (uint8_t)(tx_tail + 1u); /* TX_SIZE is 256: the index wraps by itself */
}

static uint16_t uart_tx_free(void *ctx)
{
    (void)ctx;
    return (uint16_t)(TX_SIZE - 1u - (uint8_t)(tx_head - tx_tail));
}

static void uart_write(void *ctx, const uint8_t *data, uint16_t len)
{
    (void)ctx;
    while (len--) {
        tx_buf[tx_head] = *data++;
        tx_head = (uint8_t)(tx_head + 1u);
    }
    UCSR0B |= _BV(UDRIE0);
}

/* -- time and samples ---------------------------------------------------------------------- */

static volatile uint32_t now_ms;
static uint16_t ms_acc;
static int16_t sample_set[VMF_N_CHANNELS];
static uint8_t adc_channel;

ISR(TIMER1_COMPA_vect)
{
    ms_acc += 1000u;
    while (ms_acc >= VMF_RATE_HZ) {
        ms_acc -= VMF_RATE_HZ;
        now_ms++;
    }
    adc_channel = 0;
    ADMUX = _BV(REFS0); /* AVCC reference, channel 0 */
    ADCSRA |= _BV(ADSC);
}

ISR(ADC_vect)
{
    sample_set[adc_channel] = (int16_t)ADC - 512;
    if (++adc_channel < VMF_N_CHANNELS) {
        ADMUX = (uint8_t)(_BV(REFS0) | adc_channel);
        ADCSRA |= _BV(ADSC);
        return;
    }
    vmf_sample_push(&dev, sample_set);
}

static void sampling_init(void)
{
    ADMUX = _BV(REFS0);
    ADCSRA = _BV(ADEN) | _BV(ADIE) | _BV(ADPS2) | _BV(ADPS1) | _BV(ADPS0); /* 125 kHz */
    DIDR0 = (uint8_t)((1u << VMF_N_CHANNELS) - 1u);
    OCR1A = (uint16_t)TIMER1_TOP;
    TCCR1A = 0;
    TCCR1B = _BV(WGM12) | _BV(CS11); /* CTC, F_CPU / 8 */
    TIMSK1 = _BV(OCIE1A);
}

static uint32_t millis(void)
{
    uint32_t t;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { t = now_ms; }
    return t;
}

/* -- stimulator outputs -------------------------------------------------------------------- */

static volatile uint32_t pulse_left;  /* Timer0 ticks left in this phase */
static volatile uint32_t pulse_high, pulse_low;
static volatile uint8_t pulse_on;
static uint16_t applied_pw, applied_freq;

static void pulse_next_chunk(void)
{
    uint32_t chunk = pulse_left > 256u ? 256u : pulse_left;
    if (chunk < 2u) {
        chunk = 2u;
    }
    OCR0A = (uint8_t)(chunk - 1u);
    pulse_left -= chunk > pulse_left ? pulse_left : chunk;
}

ISR(TIMER0_COMPA_vect)
{
    if (pulse_left == 0u) {
        pulse_on ^= 1u;
        if (pulse_on) {
            PORTB |= _BV(PB1);
            pulse_left = pulse_high;
        } else {
            PORTB &= (uint8_t)~_BV(PB1);
            pulse_left = pulse_low;
        }
    }
    pulse_next_chunk();
}

static void stim_off(void)
{
    TIMSK0 = 0;
    TCCR0B = 0;
    PORTD &= (uint8_t)~(_BV(PD6) | _BV(PD7));
    PORTB &= (uint8_t)~(_BV(PB1) | _BV(PB5));
    OCR2A = 0;
    applied_pw = 0;
    applied_freq = 0;
}

static void stim_apply(void)
{
    vmf_stim_output out = vmf_stim_output_now(&dev);
    uint32_t period;
    if (!out.active) {
        stim_off();
        return;
    }
    OCR2A = (uint8_t)(((uint32_t)out.amplitude_dma * 255u) / VMF_MAX_AMPLITUDE_DMA);
    PORTD = (uint8_t)((PORTD & (uint8_t)~(_BV(PD6) | _BV(PD7))) |
                      (out.channel == 0 ? _BV(PD6) : _BV(PD7)));
    PORTB |= _BV(PB5);
    if (out.pulse_width_us == applied_pw && out.frequency_hz == applied_freq) {
        return;
    }
    period = (1000000ul / PULSE_TICK_US) / out.frequency_hz;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        pulse_high = (out.pulse_width_us + PULSE_TICK_US - 1u) / PULSE_TICK_US;
        pulse_low = period - pulse_high;
        pulse_on = 0;
        pulse_left = 0; /* the first compare match starts a pulse */
        TCNT0 = 0;
        OCR0A = 2;
        TCCR0A = _BV(WGM01);             /* CTC */
        TCCR0B = _BV(CS01) | _BV(CS00); /* F_CPU / 64: 4 us */
        TIFR0 = _BV(OCF0A);
        TIMSK0 = _BV(OCIE0A);
    }
    applied_pw = out.pulse_width_us;
    applied_freq = out.frequency_hz;
}

static void outputs_init(void)
{
    DDRD |= _BV(PD6) | _BV(PD7);
    DDRB |= _BV(PB1) | _BV(PB3) | _BV(PB5);
    PORTD |= _BV(PD2) | _BV(PD3); /* lead-off inputs pulled up: nothing connected = off */
    TCCR2A = _BV(COM2A1) | _BV(WGM21) | _BV(WGM20); /* fast PWM on OC2A */
    TCCR2B = _BV(CS20);
    stim_off();
}

static void read_contact(void)
{
    vmf_set_contact(&dev, 0, !(PIND & _BV(PD2)));
    if (VMF_N_CHANNELS > 1) {
        vmf_set_contact(&dev, 1, !(PIND & _BV(PD3)));
    }
}

/* -- main loop ----------------------------------------------------------------------------- */

#ifdef VMF_ARDUINO_SKETCH
void vmf_board_main(void)
#else
int main(void)
#endif
{
    static const vmf_io io = {uart_write, uart_tx_free, 0};
    uint8_t chunk[16];
    uint8_t n, reset_cause = MCUSR;
    MCUSR = 0;
    wdt_enable(WDTO_250MS);
    outputs_init();
    uart_init();
    vmf_init(&dev, &config, io, 0);
    sampling_init();
    sei();
    vmf_hello(&dev);
    if (reset_cause & _BV(WDRF)) {
        vmf_send_device_error(&dev, ERR_WATCHDOG_RESET, "reset by watchdog");
    }
    for (;;) {
        wdt_reset();
        read_contact();
        n = 0;
        while (n < sizeof chunk && rx_tail != rx_head) {
            chunk[n++] = rx_buf[rx_tail];
            rx_tail = (uint8_t)((rx_tail + 1u) % RX_SIZE);
        }
        if (n) {
            vmf_receive(&dev, chunk, n, millis());
            stim_apply(); /* an emergency stop takes effect here, before anything else */
        }
        vmf_poll(&dev, millis());
        stim_apply();
        /* Sleep until the next interrupt (a sample tick at most 1/rate away) when idle. */
        cli();
        if (rx_tail == rx_head && !dev.ready) {
            sleep_enable();
            sei();
            sleep_cpu();
            sleep_disable();
        }
        sei();
    }
}
