// vm-feedback reference firmware for the Arduino IDE: Arduino Uno or Nano (ATmega328P, 16 MHz).
//
// Open this folder in the Arduino IDE, pick the board and the port, and upload. The code is the
// same C firmware as `make -C firmware avr` builds (the files in src/ are copies, refreshed by
// `make -C firmware arduino`; do not edit them here). Pins, sample rate and UART speed are in
// firmware/README.md: 2000 Hz x 2 channels on A0/A1, 500000 baud, stimulator enables on D6/D7.
//
// The firmware owns the timers, the ADC and the UART, so do not use Serial, analogRead, millis
// or delay in this sketch.

extern "C" void vmf_board_main(void);

void setup() {
  vmf_board_main();  // never returns: the firmware's own main loop
}

void loop() {}
