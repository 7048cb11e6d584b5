from django.apps import AppConfig


class AnswersConfig(AppConfig):
    name = "answers"
    verbose_name = "LiveQA answers"
    default_auto_field = "django.db.models.BigAutoField"
