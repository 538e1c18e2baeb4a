from actors.payments.handlers import payments

__all__ = ["payments"]
